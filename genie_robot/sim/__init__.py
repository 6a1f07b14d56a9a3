import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose otherwise

