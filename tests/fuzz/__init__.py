"""Property-based fuzzing of every reader and loader: strategies that write malformed files (`strategies`), the
readers each case runs (`targets`), and one worker process that runs them under a memory and a time bound
(`worker`)."""
