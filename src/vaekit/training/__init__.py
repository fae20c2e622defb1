"""Training and run folders: the loop, devices and precision, torchrun/DDP, checkpoints, locks, resume."""
