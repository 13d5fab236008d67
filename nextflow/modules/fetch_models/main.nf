// Download one model given as a Hub id (org/name[@revision]), or a classifier given as 500, 300
// or a URL, once: storeDir (conf/modules.config) keeps what it fetched on shared storage, so
// later runs (and -resume) find it there and run no task at all. The GPU tasks then read the
// model from the store. Offline compute nodes: pre-fetch on a login node and pass --hf_home
// instead (main.nf reads the models from that cache and runs no FETCH_MODELS task).
//
// No versions.yml: every storeDir output must be unique to its task, and the same binary's
// version is reported by the other steps.
process FETCH_MODELS {
    tag "${kind}:${id}"
    label 'process_low'

    input:
    // kind: dnabert, esm or classifier; id: the Hub id or classifier spec; home: the cache
    // the fetch writes to (HF_HOME), one per revision (revisions/<rev>) so that two revisions
    // of a model never share a stored folder; stored: the folder the fetch leaves in it
    // (<home>/hub/models--org--name, or <home>/virnucpro/classifiers/<key>), computed by
    // main.nf (storeHome, storePath) so that storeDir knows it before the task runs.
    tuple val(kind), val(id), val(home), val(stored)

    output:
    tuple val(kind), val(id), path("${stored}"), emit: model

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    export HF_HOME="\$PWD/${home}"
    export HF_HUB_CACHE="\$PWD/${home}/hub"
    virnucpro models fetch ${args} --${kind} '${id}'
    test -d '${stored}'
    """

    stub:
    """
    mkdir -p '${stored}'
    """
}
