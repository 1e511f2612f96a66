"""The marks in a temporary file's name: ``.<name><mark><tag>`` beside the final ``<name>``.

A file system storage (local, pyarrow's) writes an output, a create or a put under a hidden
sibling first; the mark says which, so a rerun finds the uploads a dead process left
(``.part-0.parquet.inprogress-<pid>``) and a sweep finds every temporary file, old or not.
"""

from __future__ import annotations

UPLOAD_MARK = ".inprogress-"  # + the writer's pid: an output being written
CREATE_MARK = ".create-"  # + a random tag: a create-if-absent's private copy
PUT_MARK = ".put-"  # + a random tag: a put's copy, renamed over the key
TEMPORARY_MARKS = (UPLOAD_MARK, CREATE_MARK, PUT_MARK)  # every temporary file's name has one
