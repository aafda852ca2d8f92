"""The environment fixture of the challenge tests, shared by this directory's modules, and the
grader of hosted code (for challenges graded as code: a worker process killed mid-load)."""

from tests.challenges.conftest import env  # noqa: F401
from tests.hosted.conftest import hosted, sandbox, tmpdir_root, work_root  # noqa: F401
