"""Search an image collection by text or example: `ovdet index` stores each image's regions
(vocabulary-free features of OWL / CLIP-region models) in LanceDB, `ovdet search` scores
them with the model's class head for any query (see docs/search.md).

Modules: store (tables, manifest), rows (images -> rows), build (incremental indexing),
ray_engine (indexing on Ray Data), ann (the ANN index: IVF-SQ or IVF-PQ), search (query -> hits), sheet (contact
sheet), api (`ovdet.Index`), command / search_command (the CLI).
"""
