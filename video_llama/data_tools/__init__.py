"""What prepares a run's inputs, outside training: annotation JSON from a folder per class
(``action_folders``), synthetic clips and recordings with timelines (``synthetic``), encoded video
files (``video_writer``), WebDataset shards (``shards``) and the quickstart's tiny LLM (``tiny_llm``).
The ``video-llama`` subcommands (``prepare``, ``synth``, ``export-shards``, ``tiny-llm``) are their
argument parsers."""
