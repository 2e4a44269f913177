"""Reduced-precision graphs: fp16 and int8 (Q/DQ) ONNX graphs, INT8 calibration images, the
nodes kept in fp32, and the held-out accuracy gate against the fp32 graph."""
