"""The Kubernetes API client, made in one place like every Google client (`conveyor.gcp`):
given, else from the in-cluster service account, else from the local kubeconfig. The kubernetes
package is imported only when a client is asked for."""

from __future__ import annotations


def custom_objects_api(api_client=None):
    """The kubernetes CustomObjectsApi over `api_client`, else the in-cluster config, else
    the local kubeconfig (KServe services in `conveyor.push.kserve`, TFJobs in
    `conveyor.train.tfjob`)."""
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CustomObjectsApi(api_client)
