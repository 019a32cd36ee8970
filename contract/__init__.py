"""The torch-free contract every stage shares: what export writes and the runtime reads, and the
rules that training, export, the runtime and the benchmarks must apply alike, each defined once
(docs/design.md sec. 2 and 3). errors: the one user-error type (UserError) and the one way a
command turns it into a CLI error (user_errors); manifest: the manifest's constants, read and
checked; preprocess: the resize policy and crop protocols; images: decoding any image to BGR
uint8 within a pixel limit; hardware: the CPU and every choice that follows from it; correlation:
SRCC, PLCC, KRCC; atomic: whole-or-nothing file writes, and output paths checked before a run;
secrets: credentials hidden in any address shown, {NAME} placeholders filled from credential files
or the environment; video: the video writers and their codecs;
degradations: the distortion kinds at known levels that training, calibration and the demo share.
It imports numpy, OpenCV and the standard library; Pillow, archspec, scipy and click load inside
the one function that needs them. It imports nothing of runtime, gamma_edge, export or training,
and never torch: they all import it."""
