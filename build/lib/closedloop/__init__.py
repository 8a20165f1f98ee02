"""closedloop: the library behind the loop (capture, retrain, judge, promote by review).

Sub-packages by what they hold: config, data, models, training, evaluation, gating,
reporting, registry, capture and serving. The DVC stages in pipelines/ and the `closedloop`
command line are thin entry points over them.
"""

__version__ = "0.1.0"
