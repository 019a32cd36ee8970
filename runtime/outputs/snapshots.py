"""A JPEG of the frame at each quality event (--snapshots FOLDER); its path goes into the event."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from contract.atomic import check_writable_folder
from contract.errors import UserError


class Snapshots:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"--snapshots '{folder}' is not a folder; create it first")
        check_writable_folder(self.folder, "--snapshots")

    def publish_event(self, event: dict, image: np.ndarray | None = None) -> None:
        if image is None:
            return
        stamp = event["time"].replace(":", "").replace("-", "")
        path = self.folder / f"{event['camera']}-{stamp}-{event['event']}.jpg"
        cv2.imwrite(str(path), image)
        event["snapshot"] = str(path)

    def publish_state(self, state: dict) -> None:
        pass

    def close(self) -> None:
        pass
