"""The JSON files the stages pass to one another, each with one declared shape (pydantic 2).

| file | model | written by |
| --- | --- | --- |
| artifacts/snapshot/schema.json | ``snapshot.SnapshotSchema`` | collect |
| models/candidate/card.json | ``card.ModelCard`` | train |
| models/champion/entry.json | ``champion.ChampionEntry`` | champion |
| reports/metrics.json, reports/comparison.json | ``evaluation.Metrics``, ``evaluation.Comparison`` | evaluate |
| reports/drift.json | ``drift.DriftReport`` | drift |
| reports/gate.json | ``gate.GateReport`` (its JSON Schema: schemas/gate.schema.json) | gate |

Each model has one reader, ``read``, which turns a missing or corrupt file into one DataError
line naming the file and what is wrong, and one writer, ``write``: atomic, sorted keys, no NaN.
The shapes sit below every layer that reads them (the gate reads the model card, evaluation
reads the champion's entry), one module each, so a stage depends in dvc.yaml only on the
shapes it reads or writes.
"""
