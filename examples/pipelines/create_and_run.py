"""Create the reviews pipeline from flows/reviews.py, run it, read it node by node.

    export GRISTMILL_ENVIRONMENT_URL=http://127.0.0.1:8000 GRISTMILL_SDK_TOKEN=...
    python examples/pipelines/create_and_run.py
"""

from __future__ import annotations

from pathlib import Path

from flows.reviews import reviews_pipeline

from gristmill import Gristmill

REVIEWS = ["Great product, love it", "awful. broken on arrival", "fine", "  "]

client = Gristmill()
# packages this folder (the one holding flows/), creates one step per @step, then the graph
client.create_pipeline(pipeline_name="reviews", pipeline=reviews_pipeline,
                       container_config={"local_folder": str(Path(__file__).parent),
                                         "requirements_path": ""})
result = client.run_pipeline("reviews", inputs={"reviews": REVIEWS})
print("outputs:", result["outputs"])
execution = client.get_pipeline_execution(result["execution_id"])
for node in execution["steps"]:
    print(f"  {node['name']:<10} {node['status']:<10} cached={node['cached']} "
          f"{node.get('check') or ''}")
print("warnings:", execution["warnings"])
