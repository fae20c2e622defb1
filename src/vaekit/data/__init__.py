"""Data: named sets, the user's own images and arrays, verified downloads, packs, and how a batch is scored."""
