"""craft-ai-sdk 0.74.7: identity, environment variables, data store, resource metrics, and
the clear answers for what a self-hosted environment does not run."""

from __future__ import annotations


def test_identity_variables_and_environment(client, unique) -> None:
    found = client('''
    from craft_ai_sdk.shared.environments import get_environment_id

    me = sdk.who_am_i()
    name = "COMPAT074_" + ARGS["unique"]
    sdk.create_or_update_environment_variable(name, "v1")
    sdk.create_or_update_environment_variable(name, "v2")
    listed = {v["name"]: v["value"] for v in sdk.list_environment_variables()}
    deleted = sdk.delete_environment_variable(name)
    emit({"me": me, "user": sdk.get_user(me["id"]), "value": listed.get(name),
          "deleted": deleted,
          "gone": name not in {v["name"] for v in sdk.list_environment_variables()},
          "environment_id": get_environment_id(sdk)})
    ''', unique=unique)
    assert found["me"]["email"] == "admin@localhost"
    assert found["user"]["id"] == found["me"]["id"]
    assert found["value"] == "v2" and found["gone"]
    assert found["deleted"]["name"] == f"COMPAT074_{unique}"
    assert len(found["environment_id"]) == 36


def test_data_store(client, unique) -> None:
    found = client('''
    import io

    prefix = "compat074-" + ARGS["unique"]
    for index in range(7):  # more than a page (5 in tests): continuation tokens
        sdk.upload_data_store_object(io.BytesIO(b"x" * (index + 1)), f"{prefix}/{index}.txt")
    listed = [o["path"] for o in sdk.iter_data_store_objects(prefix)]
    info = sdk.get_data_store_object_information(f"{prefix}/3.txt")
    buffer = io.BytesIO()
    sdk.download_data_store_object(f"{prefix}/3.txt", buffer)
    big = bytes(range(256)) * (14 * 1024)  # 3.5 MiB: multipart, in 1 MiB parts
    sdk.upload_data_store_object(io.BytesIO(big), f"{prefix}/big/blob.bin")
    big_back = io.BytesIO()
    sdk.download_data_store_object(f"{prefix}/big/blob.bin", big_back)
    sdk.delete_data_store_object(f"{prefix}/big/blob.bin")
    deleted = sdk.delete_data_store_object(f"{prefix}/3.txt")
    missing = error_of(sdk.get_data_store_object_information, f"{prefix}/3.txt")
    emit({"listed": listed, "size": info["size"], "content": buffer.getvalue().decode(),
          "deleted": deleted, "missing": missing, "big_round_trip": big_back.getvalue() == big,
          "after": len(sdk.list_data_store_objects(prefix))})
    ''', unique=unique)
    prefix = f"compat074-{unique}"
    assert sorted(found["listed"]) == [f"{prefix}/{i}.txt" for i in range(7)]
    assert found["size"] == "4.00 B" and found["content"] == "xxxx"
    assert found["deleted"] == {"path": f"{prefix}/3.txt"}
    assert found["missing"]["status_code"] == 404
    assert found["after"] == 6
    assert found["big_round_trip"]


def test_resource_metrics(client) -> None:
    found = client('''
    from datetime import datetime, timedelta

    end = datetime.now()
    start = end - timedelta(minutes=5)
    metrics = sdk.get_resource_metrics(start, end)
    csv = sdk.get_resource_metrics(start, end, csv=True)
    emit({"keys": sorted(metrics["metrics"]), "additional": sorted(metrics["additional_data"]),
          "csv_head": csv.decode().splitlines()[0]})
    ''')
    assert {"cpu_usage", "ram_usage", "disk_usage"} <= set(found["keys"])
    assert {"total_disk", "total_ram"} <= set(found["additional"])
    assert "," in found["csv_head"]


def test_templates_and_vector_database_are_clearly_not_supported(client, unique) -> None:
    found = client('''
    emit({"list": error_of(sdk.list_pipeline_templates),
          "get": error_of(sdk.get_pipeline_template, "llama"),
          "create": error_of(sdk.create_pipeline, "from-template-" + ARGS["unique"],
                             pipeline_template_name="llama"),
          "vector": error_of(sdk.get_vector_database_credentials)})
    ''', unique=unique)
    for call in ("list", "get", "create"):
        assert found[call]["status_code"] == 501, found[call]
        assert found[call]["name"] == "NotSupported"
        assert "Pipeline templates are not supported" in found[call]["message"]
    assert found["vector"]["status_code"] == 501
    assert "does not run a vector database" in found["vector"]["message"]
