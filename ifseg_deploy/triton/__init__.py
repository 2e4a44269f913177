"""Triton Inference Server: the model repository ``export --format triton`` writes and the client of ``--server``.

* :mod:`.names`: tensor, file and parameter names shared by the repository, the server-side models and the client;
* :mod:`.config`: the ``config.pbtxt`` writers;
* :mod:`.repository`: the repository writer and its validation;
* :mod:`.model_template`: the ``model.py`` copied into the repository's Python models;
* :mod:`.host`: what those models compute (this package's own pipeline, importable without the export layer);
* :mod:`.local_server`: the ``tritonserver`` of the nvidia-pytriton wheel, for trials and tests;
* :mod:`.client`: :class:`~.client.TritonBackend`, the server as one more execution backend of a
  :class:`~ifseg_deploy.runtime.segmenter.Segmenter`.
"""
