"""Artificial ("image-free") images of category words and the fixed held-out set scored on them.

Shared by training (:mod:`ifseg_deploy.train`, which learns from them) and export
(:mod:`ifseg_deploy.exporter`, which re-scores a trained bundle's held-out set through the
exported graph).
"""
