"""``ifseg-deploy checks``: what this machine has (:mod:`.environment`), whether every export and
backend available here works (:mod:`.selftest`), and the report of both (:mod:`.report`)."""
