"""Deployment spec files: `mlops deploy --spec deploy.yaml`, `mlops diff --spec`, `mlops spec
schema`.

* `model`: the pydantic model of the file (`DeploymentSpec`) and its JSON Schema;
* `load`: reading a file, with each error as `file:line: field: problem`;
* `plan`: what the file asks for against what the ledger records, field by field;
* `store`: the applied spec (monitoring and redeploy settings) in the ledger database.
"""
