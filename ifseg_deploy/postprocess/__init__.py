"""After the decoder: kNN smoothing in ResNet-feature space, up-sampling to the image, argmax."""
