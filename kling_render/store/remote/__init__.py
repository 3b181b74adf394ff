"""The shared remote (SPEC §6): clips and claims on object storage, shared by machines and CI.

Named by ``KLING_RENDER_REMOTE`` (which wins) or ``remote:`` in the project, e.g.
``s3://bucket/prefix`` (standard AWS variables: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION), ``gs://…``, ``az://…`` or
``file:///shared/dir``. Layout under the prefix::

    clips/<provider>/<key>.json        a clip's record (create-only)       remote/clips.py
    blobs/sha256/<sha[:2]>/<sha>.mp4   its bytes, named by their sha256     remote/clips.py
    stills/<provider>/<key>.json       a still's record (create-only)      remote/clips.py
    blobs/sha256/<sha[:2]>/<sha>.img   its bytes                            remote/clips.py
    claims/<key>                       who pays for a shot key + task id    remote/claims.py
    segments/<key>.json                an encoded segment's record          remote/segments.py
    clock                              a scratch object: its Last-Modified  remote/store.py
                                       is the store's time (claims' ages)

Every object-store call goes through remote/store.py (errors, retries, redaction); a run opens
the remote with remote/connect.py. This package imports nothing itself, so loading a project
(which checks its ``remote:`` with remote/config.py) does not pay for the rest.
"""
