"""`genie-robot play`: Genie's "one image in, a playable world out" as a local web page.

- `session`: one player's world (frames, actions taken, undo, previews of all 8 codes, GIF), with no web imports.
- `models`: which model a session plays, exported for onnxruntime once and loaded on first use.
- `camera`: the latest frame of a ROS 2 camera topic as a start (rclpy imported only when asked for).
- `app`: the Starlette app and its uvicorn server; the page itself is `static/`.
"""
