"""Export: one argument object (:mod:`.args`), one format table (:mod:`.formats`), one entry point
(:func:`.api.export_model`); the ONNX graph and its verification (:mod:`.onnx`), reduced-precision
graphs (:mod:`.precision`), TensorRT profiles, operator check and engines (:mod:`.tensorrt`),
OpenVINO IR folders (:mod:`.openvino`)."""
