#!/bin/sh
# Build and time an ifseg-deploy engine by hand for A100/H100 class (sm_80/sm_90): batched serving.
# EMBED_DIM: model width (256 OFA-tiny, 512 medium, 768 base). Image shapes are for ifseg-deploy export --imgsz 512.
# Strongly typed: the engine runs in the precision of model.onnx (ifseg-deploy export --precision fp32|fp16|int8).
EMBED_DIM=${EMBED_DIM:-256}
trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped "--minShapes=images:1x3x512x512,prompt_embeds:1x16x${EMBED_DIM},class_embeds:1x${EMBED_DIM}" "--optShapes=images:8x3x512x683,prompt_embeds:1x64x${EMBED_DIM},class_embeds:32x${EMBED_DIM}" "--maxShapes=images:16x3x1024x1366,prompt_embeds:1x768x${EMBED_DIM},class_embeds:256x${EMBED_DIM}" --memPoolSize=workspace:16384M --builderOptimizationLevel=3 --timingCacheFile=timing.cache
