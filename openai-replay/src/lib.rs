//! openai-replay (being written).
