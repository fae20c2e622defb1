"""`vaekit serve`: a latent-space explorer in the browser (FastAPI + one static page, no build step)."""
