"""Dataset scoring for `gamma-edge score`: inputs lists what the arguments name (folders, globs,
path lists, Parquet path columns, WebDataset shards) in a fixed order; ray_engine scores that list
on Ray Data, resumably, with the Scorer's own loop in each actor; score_table is the Parquet table
it writes and how an interrupted run resumes (docs/ray.md). It may import contract and
runtime.inference; Ray and pyarrow are imported only where the Ray engine or a Parquet file needs
them, so the local engine never loads them."""
