import subprocess
import sys


def test_help_runs_and_import_is_light() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, convlens; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "False"
    res = subprocess.run([sys.executable, "-m", "convlens", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "convlens" in res.stdout
