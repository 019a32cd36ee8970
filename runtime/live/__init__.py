"""One live source scored as it plays: source (what SOURCE names, opening it with OpenCV and its
timeouts), frames (frames and the typed signals a reader hands over: Gap, Reconnect, End), readers
(file and live reader threads, reconnects with backoff), selection (which frames are scored, which
are filler), summary (endings, the run summary, Ctrl-C / SIGTERM), display (--save, --show),
session (what a run of one source and a fleet share) and runner (StreamRunner). A filler, stale or
just-reconnected frame is never scored. It may import contract, runtime.inference, runtime.watch and
runtime.outputs; the fleet and the demo build on it."""
