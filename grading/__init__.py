"""The grader engine: runner, HTTP and load generation, metrics, nemesis, telemetry, scoring, reports."""
