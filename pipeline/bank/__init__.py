"""The rollout bank: the explorer's samples with cached rewards, the only contract between stages.

Stage 1 (`stage1_explore`) writes it, stage 2 (`stage2_train`) reads it; neither imports
the other. On disk (any pyarrow filesystem URI; a local directory by default):

    bank.json                       identity: explorer, tokenizer, prompts, template,
                                    sampling, verifier, schema version, fingerprint
    manifests/worker-IofN.json      the complete shards written by worker I of N
    shards/wIII-SSSSSS.parquet      rows (`schema.BANK_SCHEMA`), zstd-compressed

Shards are written under a temporary name and renamed; a worker's manifest is replaced
atomically after each shard and names only complete shards. A kill at any moment leaves
a valid bank; files that no manifest names are ignored (and cleaned up on resume).
What training reads of a bank and checks first (tokenizer, template, prompt ids, stop set,
log-prob convention) is `for_training`.
"""
