"""How a run ends and what it did: the endings table, the run summary, and Ctrl-C / SIGTERM."""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field

from contract.stats import RunningQuantiles, RunningStats, rounded


@dataclass(frozen=True)
class Ending:
    """One way a run can end: the word the summary's `ended` field and the final line use,
    the exit status of `gamma-edge run`, and what it means (the table in docs/runtime.md)."""

    word: str
    exit_status: int
    meaning: str


ENDINGS = {ending.word: ending for ending in (
    Ending("finished", 0, "a file was read to its end, or --max-frames frames were read"),
    Ending("stopped", 0, "Ctrl-C, SIGTERM, or q / Esc in the --show window"),
    Ending("source never opened", 1, "the source could not be opened at the start"),
    Ending("source lost", 3, "a live source stopped delivering frames and --retries reopen attempts failed"),
    Ending("file truncated", 4, "a video file ended before the frame count in its header"),
    Ending("no frames", 5, "a video file opened but not one frame could be read from it"),
)}
STOPPED = "stopped on request (Ctrl-C, SIGTERM, or q / Esc in the window)"


def max_frames_detail(count: int) -> str:
    return f"{count} frames read (--max-frames)"


@dataclass
class Summary:
    source: str
    engine: str = ""                 # the backend's own description: engine, device, precision read back
    precision: str = ""
    frames_read: int = 0
    scored: int = 0
    skipped: int = 0
    dropped: int = 0
    blank: int = 0
    settling: int = 0
    reconnects: int = 0
    low: int = 0
    elapsed_s: float = 0.0
    scores: RunningStats = field(default_factory=RunningStats, repr=False)
    latencies_ms: RunningQuantiles = field(default_factory=RunningQuantiles, repr=False)
    ended: str = ""                  # a key of ENDINGS
    detail: str = ""                 # the final line: what ended the run, in one sentence

    @property
    def exit_status(self) -> int | None:
        """None while the run has not ended."""
        return ENDINGS[self.ended].exit_status if self.ended in ENDINGS else None

    def add_score(self, score: float, latency_ms: float, low: bool) -> None:
        self.scored += 1
        self.low += low
        self.scores.add(score)
        self.latencies_ms.add(latency_ms)

    def end(self, ended: str, detail: str) -> None:
        self.ended, self.detail = ended, detail

    def take_reader_counts(self, reader, replaced: int = 0) -> None:
        """The reader's counts once it has closed; frames replaced before scoring count as dropped."""
        self.frames_read = reader.read
        if reader.live:
            self.dropped = reader.dropped + replaced
            self.settling = reader.settling
            self.reconnects = reader.reconnects

    def as_dict(self) -> dict:
        scores = self.scores
        return {
            "event": "summary", "source": self.source, "engine": self.engine, "precision": self.precision,
            "frames_read": self.frames_read,
            "scored": self.scored, "skipped": self.skipped, "dropped": self.dropped, "blank": self.blank,
            "settling": self.settling, "reconnects": self.reconnects, "low": self.low,
            "mean_score": rounded(scores.mean, 6),
            "min_score": rounded(scores.minimum, 6),
            "scored_per_s": round(self.scored / self.elapsed_s, 3) if self.elapsed_s > 0 else None,
            "latency_ms_p50": rounded(self.latencies_ms.quantile(50), 3),
            "latency_ms_p95": rounded(self.latencies_ms.quantile(95), 3),
            "elapsed_s": round(self.elapsed_s, 3), "ended": self.ended, "detail": self.detail,
            "exit_status": self.exit_status,
        }

    def text(self) -> str:
        d = self.as_dict()
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        return (f"{d['source']}: {d['frames_read']} frames read, {d['scored']} scored, {d['skipped']} skipped, "
                f"{d['dropped']} dropped, {d['blank'] + d['settling']} not scored (blank or settling), "
                f"{d['reconnects']} reconnects; score mean {fmt(d['mean_score'], '.4f')}, "
                f"min {fmt(d['min_score'], '.4f')}; {fmt(d['scored_per_s'], '.2f')} scored/s, latency p50 "
                f"{fmt(d['latency_ms_p50'], '.1f')} ms, p95 {fmt(d['latency_ms_p95'], '.1f')} ms ({d['ended']})")

    def final_line(self) -> str:
        """The last line on stderr: the ending and why; `Error: ...` for an ending that is a failure."""
        return final_line(self.ended, self.detail)


def final_line(ended: str, detail: str) -> str:
    return f"Error: {detail}" if ENDINGS[ended].exit_status else f"{ended}: {detail}"


class StopSignals:
    """Ctrl-C and SIGTERM are one request: both set `stop`, the run ends after the frame in hand
    with its summary, and both count the same. A second signal of either kind sets `abort`: the
    run stops waiting for its reader thread (a stalled open or read). Without `abort` (Python
    callers), a second Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, stop: threading.Event, abort: threading.Event | None = None):
        self.stop, self.abort, self.previous = stop, abort, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.stop.is_set() and self.abort is not None:
            self.abort.set()
        elif self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False
