#!/bin/sh
# Build and time an ifseg-deploy engine by hand for Jetson Orin Nano 8 GB (sm_87, shared memory): one camera stream.
# EMBED_DIM: model width (256 OFA-tiny, 512 medium, 768 base). Image shapes are for ifseg-deploy export --imgsz 512.
# Strongly typed: the engine runs in the precision of model.onnx (ifseg-deploy export --precision fp32|fp16|int8).
EMBED_DIM=${EMBED_DIM:-256}
trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped "--minShapes=images:1x3x512x512,prompt_embeds:1x16x${EMBED_DIM},class_embeds:1x${EMBED_DIM}" "--optShapes=images:1x3x512x683,prompt_embeds:1x40x${EMBED_DIM},class_embeds:8x${EMBED_DIM}" "--maxShapes=images:1x3x1024x1024,prompt_embeds:1x160x${EMBED_DIM},class_embeds:48x${EMBED_DIM}" --memPoolSize=workspace:1024M --builderOptimizationLevel=3 --timingCacheFile=timing.cache
