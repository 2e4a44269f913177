"""Evaluation: mIoU / mAcc / aAcc with the reference protocol, dataset layouts and class lists."""
