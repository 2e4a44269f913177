"""Text side: GPT-2 BPE + OFA dictionary, category lists, the IFSeg prompt."""
