"""The end of a fleet's run: each camera's summary, the fleet's figures, and its ending."""
from __future__ import annotations

from dataclasses import dataclass

from contract.stats import RunningQuantiles, rounded
from runtime.live.summary import ENDINGS, STOPPED, Summary, final_line


@dataclass
class FleetSummary:
    cameras: list[tuple[str, Summary]]
    engine: str = ""
    batches: int = 0
    batch_images: int = 0
    elapsed_s: float = 0.0
    ended: str = "stopped"
    detail: str = STOPPED

    @property
    def exit_status(self) -> int:
        return ENDINGS[self.ended].exit_status

    @property
    def scored(self) -> int:
        return sum(summary.scored for _, summary in self.cameras)

    def add_batch(self, images: int) -> None:
        self.batches += 1
        self.batch_images += images

    def end_with_worst(self) -> None:
        """Every camera has ended (--max-frames, or --retries ran out): the worst ending is the fleet's."""
        worst = max((summary for _, summary in self.cameras), key=lambda s: ENDINGS[s.ended].exit_status)
        self.ended = worst.ended
        self.detail = "; ".join(f"{name}: {summary.detail}" for name, summary in self.cameras
                                if summary.ended == worst.ended)

    def as_dict(self) -> dict:
        latencies = RunningQuantiles()
        for _, summary in self.cameras:
            latencies.merge(summary.latencies_ms)
        return {"event": "fleet_summary", "cameras": len(self.cameras), "engine": self.engine,
                "scored": self.scored, "scored_per_s": round(self.scored / self.elapsed_s, 3) if self.elapsed_s else None,
                "batches": self.batches,
                "images_per_batch": round(self.batch_images / self.batches, 3) if self.batches else None,
                "latency_ms_p50": rounded(latencies.quantile(50), 3),
                "latency_ms_p95": rounded(latencies.quantile(95), 3),
                "elapsed_s": round(self.elapsed_s, 3), "ended": self.ended, "detail": self.detail,
                "exit_status": self.exit_status}

    def lines(self) -> list[str]:
        """stderr: one line per camera, then the fleet's."""
        d = self.as_dict()
        fleet = (f"fleet of {d['cameras']}: {d['scored']} frames scored in {d['batches']} backend calls "
                 f"({d['images_per_batch'] or 0:.2f} frames per call), {d['scored_per_s'] or 0:.2f} scored/s")
        return [f"{name}: {summary.text()}" for name, summary in self.cameras] + [fleet]

    def final_line(self) -> str:
        return final_line(self.ended, self.detail)
