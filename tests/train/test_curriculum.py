"""Curriculum stages: which stage a step is in, the stages' row filters on real Ray Data datasets,
and the stream switching shards at stage boundaries and resuming inside a stage."""

import pyarrow as pa
import pytest
import torch

from voxray.config.sections import CurriculumStage, TrainConfig
from voxray.train import curriculum
from voxray.train.data import BatchStream, DataPosition

STAGES = (CurriculumStage(name="monolingual", until_step=3, where=("n_languages <= 1",)),
          CurriculumStage(until_step=5, where=("n_languages <= 2", "code_switched == true")))


def table() -> pa.Table:
    n_languages = [1, 1, 2, 3, 2, 1, 2, 1]
    return pa.table({"id": [f"u{i}" for i in range(8)], "n_frames": [10 + i for i in range(8)],
                     "n_languages": pa.array(n_languages, pa.int32()),
                     "code_switched": [n > 1 for n in n_languages]})


def test_stages_by_step_and_their_description():
    assert [curriculum.stage_at(STAGES, step) for step in range(7)] == [0, 0, 0, 1, 1, -1, -1]
    assert curriculum.describe(STAGES, 0) == "stage 1/3 'monolingual' (n_languages <= 1) until step 3"
    assert curriculum.describe(STAGES, -1) == "stage 3/3 (all rows)"
    assert curriculum.columns(STAGES) == ["code_switched", "n_languages"]


def test_conditions_are_checked_where_they_are_written():
    with pytest.raises(ValueError, match="'speaker' is not a column a stage can filter on"):
        TrainConfig(curriculum=[{"until_step": 3, "where": ["speaker == a"]}])
    with pytest.raises(ValueError, match="expected 'column op value'"):
        TrainConfig(curriculum=[{"until_step": 3, "where": ["n_languages in [1, 2]"]}])
    with pytest.raises(ValueError, match="until_step must increase"):
        TrainConfig(curriculum=[{"until_step": 3}, {"until_step": 3}])
    assert TrainConfig(curriculum=[{"until_step": 3, "where": ["accent == kl"]}]).curriculum[0].until_step == 3


def test_stage_datasets_keep_only_their_rows(ray_cluster):
    import ray.data

    datasets = curriculum.stage_datasets(ray.data.from_arrow(table()), STAGES)
    assert sorted(datasets) == ["train_stage0", "train_stage1"]
    assert sorted(r["id"] for r in datasets["train_stage0"].take_all()) == ["u0", "u1", "u5", "u7"]
    assert sorted(r["id"] for r in datasets["train_stage1"].take_all()) == ["u2", "u4", "u6"]
    assert curriculum.keep(table().replace_schema_metadata(), ()).num_rows == 8


def _stream(ray, step, position, announced):
    import ray.data

    full = ray.data.from_arrow(table())
    datasets = {"train": full, **curriculum.stage_datasets(full, STAGES)}

    def open_stream(name, at):
        return BatchStream(lambda: datasets[name], lambda rows, rng: [r["id"] for r in rows], batch_size=2, seed=0,
                           rank=0, device=torch.device("cpu"), position=at)

    return curriculum.CurriculumStream(STAGES, step, open_stream, position, announced.append)


def test_the_stream_follows_the_stages_and_resumes_inside_one(ray_cluster):
    state = {"step": 0}
    announced: list[int] = []
    stream = _stream(ray_cluster, lambda: state["step"], DataPosition(), announced)
    batches, positions = [], []
    for step in range(7):
        state["step"] = step
        batches.append(stream.next())
        positions.append(DataPosition(**vars(stream.position)))
    monolingual, switched = {"u0", "u1", "u5", "u7"}, {"u2", "u4", "u6"}
    assert all(set(b) <= monolingual for b in batches[:3])
    assert all(set(b) <= switched for b in batches[3:5])
    assert announced == [0, 1, -1] and positions[3].stage == 1 and positions[6].stage == -1
    # a run resumed after step 4 (stage 2, one batch into it) goes on with stage 2's next batch
    state["step"] = 4
    again: list[int] = []
    resumed = _stream(ray_cluster, lambda: state["step"], positions[3], again)
    resumed.set_rng_state(stream.rng_state())
    assert resumed.next() == batches[4] and again == [1] and resumed.position.batches == 2
