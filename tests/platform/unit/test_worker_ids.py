"""Each local warm worker has a pod id and a folder of its own (executors/local_workers.py).
End to end, a variant pipeline created again under its name: test_rollout_worker_ids.py."""

from __future__ import annotations

from pathlib import Path

from gristmill_platform.executors.local_workers import PodIds, own_folder, remove_own_folder
from gristmill_platform.executors.workers import node_key, variant_key


def test_the_first_worker_of_a_generation_keeps_its_plain_id_and_the_next_are_numbered(
        ) -> None:
    ids = PodIds()
    key = variant_key("ep", "challenger")
    assert ids.next("ep", 1) == "local-ep-1"
    assert ids.next(key, 1) == "local-ep@challenger-1"
    # a restart after a crash, then a roll at the same generation (the variant's pipeline
    # created again): never the id of a worker before them, which may still drain
    assert ids.next("ep", 1) == "local-ep-1-1"
    assert ids.next(key, 1) == "local-ep@challenger-1-1"
    assert ids.next(key, 1) == "local-ep@challenger-1-2"
    # an update: a new generation starts plain
    assert ids.next("ep", 2) == "local-ep-2"
    # the deployment deleted and created again under its name starts at generation 1 again
    assert ids.next("ep", 1) == "local-ep-1-2"
    assert ids.next(node_key("ep", "scale"), 1) == "local-ep@#scale-1"


def test_two_workers_under_one_pod_id_never_remove_each_other_s_files(tmp_path: Path
                                                                       ) -> None:
    # as two control services sharing the data directory, each with its own worker
    pod = tmp_path / "low-latency" / "local-ep-1"
    first, second = own_folder(pod), own_folder(pod)
    assert first != second and first.is_dir() and second.is_dir()
    (second / "execution").mkdir()
    (second / "execution" / "input.csv").write_text("kept")

    remove_own_folder(first.parent)  # the first one stopped
    assert not first.exists()
    assert (second / "execution" / "input.csv").read_text() == "kept"

    remove_own_folder(second.parent)  # the last one: the pod's folder goes too
    assert not pod.exists()
    assert own_folder(pod).is_dir()  # and comes back for the next
