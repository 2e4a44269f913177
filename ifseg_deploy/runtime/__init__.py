"""Inference runtime: vocabulary (text side), execution backends, the Segmenter API."""
