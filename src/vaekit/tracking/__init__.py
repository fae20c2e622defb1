"""Experiment loggers: callbacks that send a run's numbers and pictures to the tools users already watch runs with."""
