"""Inference: one exported model scoring uint8 BGR crops. backends holds the small Backend
interface with its ONNX Runtime and OpenVINO implementations (each imports its engine only when it
is chosen); scorer holds the Scorer (images in, per-scene scores out, decoding and cropping in
threads beside the backend) and the choice of the embedded demo model when no model is given.
The bottom wing of the runtime: it may import only contract, runtime.shipped, numpy, OpenCV and the engines,
never another runtime wing, and the other wings build on it."""
