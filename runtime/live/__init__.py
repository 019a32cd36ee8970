"""One live source scored as it plays: stream reads a camera, a video file or a network stream
(reader threads, reconnects with backoff, open and read timeouts), never scores a filler, stale
or just-reconnected frame, and runs the Scorer on the frames (StreamRunner), with smoothing, a
threshold, JSON lines and an annotated video. It may import contract and runtime.inference; the
fleet and the demo build on it."""
