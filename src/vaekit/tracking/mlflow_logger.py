"""`--logger mlflow`: the config as params, each epoch's scalars and pictures, and at the end the run folder's files as
artifacts, sent to an MLflow tracking URI (by default a store in RUN/mlruns: an SQLite database and an artifact
folder, since MLflow retired its plain-file store)."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vaekit.errors import VaekitError
from vaekit.files import atomic_write_json, ensure_folder, not_a_folder
from vaekit.tracking.pictures import epoch_pictures
from vaekit.training.callbacks import Callback, EpochEnd, RunEnd, RunStart

STORE = "mlruns"
RUN_FILE = "mlflow.json"  # the MLflow run this run folder logs to, so --resume continues the same one
STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
BATCH = 100  # MLflow takes at most 100 params per call


class MLflowLogger(Callback):
    """Talks to MLflow through `MlflowClient` (no global active run, so it cannot disturb a user's own MLflow code).

    Tracking URI: `tracking_uri`, else $MLFLOW_TRACKING_URI, else sqlite:///RUN/mlruns/mlflow.db with artifacts in
    RUN/mlruns/artifacts. Experiment: $MLFLOW_EXPERIMENT_NAME, else "vaekit". The MLflow run is named after the run
    folder."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise VaekitError("--logger mlflow needs the mlflow package: pip install 'vaekit[mlflow]'") from None
        self.client_class = MlflowClient
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.client: Any = None
        self.run_id = ""
        self.seed = 0

    def before_run(self, run_dir: Path) -> None:
        """The tracking URI is one MLflow knows and, for a server, answers within seconds (MLflow itself retries an
        unreachable one for minutes); the default store's folder is a real folder or absent."""
        if self.tracking_uri is None:
            refusal = not_a_folder(run_dir / STORE)
            if refusal is not None:
                raise VaekitError(f"{refusal} (--logger mlflow keeps its store there)")
            return
        from mlflow.exceptions import MlflowException

        try:
            self.client_class(tracking_uri=self.tracking_uri)
        except MlflowException as error:
            scheme = urlsplit(self.tracking_uri).scheme
            reason = f"unsupported scheme {scheme!r}" if "unsupported URI" in str(error) else str(error).strip()
            raise VaekitError(
                f"MLflow tracking URI {self.tracking_uri} is not one MLflow can use ({reason}): fix --mlflow-uri or "
                "$MLFLOW_TRACKING_URI (http(s)://HOST:PORT of a server, sqlite:///FILE, or a folder)"
            ) from None
        check_reachable(self.tracking_uri)

    def on_run_start(self, start: RunStart) -> None:
        from mlflow.entities import Param

        store = (start.run_dir / STORE).resolve()
        if self.tracking_uri is None:
            ensure_folder(start.run_dir / STORE)
        uri = self.tracking_uri or default_uri(start.run_dir)
        self.client, self.seed = self.client_class(tracking_uri=uri), start.config.seed
        self.run_id = self._continued_run(start.run_dir, uri) if start.epochs_done else ""
        if self.run_id:
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vaekit")
        experiment = self.client.get_experiment_by_name(name)
        artifacts = None if self.tracking_uri else (store / "artifacts").as_uri()
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name, artifacts)
        self.run_id = self.client.create_run(experiment_id, run_name=start.run_dir.name).info.run_id
        atomic_write_json(start.run_dir / RUN_FILE, {"tracking_uri": uri, "run_id": self.run_id})
        params = [Param(key, str(value)) for key, value in flatten(start.config.to_dict()).items()]
        for first in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[first : first + BATCH])

    def on_epoch_end(self, end: EpochEnd) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, end.epoch) for name, value in end.scalars().items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        for name, picture in epoch_pictures(end, self.seed).items():
            self.client.log_image(self.run_id, picture, artifact_file=f"{name}/epoch_{end.epoch:04d}.png")

    def on_run_end(self, end: RunEnd) -> None:
        if self.client is None:
            return
        if end.status == "finished":
            for path in artifact_files(end.run_dir):
                folder = path.parent.relative_to(end.run_dir).as_posix()
                self.client.log_artifact(self.run_id, str(path), "run" if folder == "." else f"run/{folder}")
        self.client.set_terminated(self.run_id, status=STATUS[end.status])

    def _continued_run(self, run_dir: Path, uri: str) -> str:
        """The MLflow run this run folder logged to, if it logged to the same tracking URI."""
        import json

        try:
            saved = json.loads((run_dir / RUN_FILE).read_text())
        except (OSError, ValueError):
            return ""
        return str(saved.get("run_id", "")) if saved.get("tracking_uri") == uri else ""


def artifact_files(run_dir: Path) -> list[Path]:
    """The run folder's files to upload: regular files inside it only, never a symbolic link (which may point at a
    secret out of the folder) nor what one leads to, nor hidden files or the MLflow store itself."""
    found = []
    for folder, subfolders, names in os.walk(run_dir):  # does not descend into linked folders
        here = Path(folder)
        subfolders[:] = sorted(n for n in subfolders if not n.startswith(".") and not (here == run_dir and n == STORE))
        for name in sorted(names):
            path = here / name
            if not name.startswith(".") and stat.S_ISREG(os.lstat(path).st_mode):
                found.append(path)
    return found


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) tracking server accepts a connection within `timeout_s`, or one line says it does not."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise VaekitError(
            f"MLflow tracking server {uri} is not reachable ({reason}): start it, or fix --mlflow-uri or "
            "$MLFLOW_TRACKING_URI"
        ) from None


def default_uri(run_dir: Path) -> str:
    """The tracking URI of the store kept in the run folder."""
    return f"sqlite:///{(run_dir / STORE / 'mlflow.db').resolve()}"


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"latent_dim": 20}} -> {"model.latent_dim": 20}: MLflow params are flat."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
