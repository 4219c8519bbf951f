//! The generation loop: prompt to streamed tokens, tying the engine to the text layer.
