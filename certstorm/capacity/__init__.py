"""The capacity model: the main job (``run``), what it measured (``analysis``), the model fitted to it
(``planner``: USL, storm simulation), the report built from it (``report``) and sizing answers (``plan``)."""
