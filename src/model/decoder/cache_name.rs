//! The names of a decoder's cache tensors: `past_key_values.{layer}.{decoder|encoder}.{key|value}`
//! in, `present.{layer}.{decoder|encoder}.{key|value}` out (optimum's names, which this
//! project's export keeps).

/// Which attention of a layer a cache tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Attention {
    /// The self-attention over the tokens decoded so far (`decoder`): grows by a position a
    /// token, one row a sequence.
    SelfAttention,
    /// The cross-attention over the encoder's features (`encoder`): fixed for a window.
    Cross,
}

/// Which half of an attention's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Part {
    /// The keys.
    Key,
    /// The values.
    Value,
}

impl Part {
    /// Both parts, in the order caches hold them.
    pub(super) const BOTH: [Part; 2] = [Part::Key, Part::Value];

    /// Where the part sits in a layer's `[key, value]` pair.
    pub(super) fn index(self) -> usize {
        match self {
            Part::Key => 0,
            Part::Value => 1,
        }
    }
}

/// One cache tensor: its layer, attention and part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct CacheName {
    /// The decoder layer, from 0.
    pub layer: usize,
    /// Self- or cross-attention.
    pub attention: Attention,
    /// Keys or values.
    pub part: Part,
}

impl CacheName {
    /// Reads `past_key_values.{layer}.{decoder|encoder}.{key|value}` or
    /// `present.{layer}.{decoder|encoder}.{key|value}`; `None` for any other name.
    pub(super) fn parse(name: &str) -> Option<CacheName> {
        let rest = name
            .strip_prefix("past_key_values.")
            .or_else(|| name.strip_prefix("present."))?;
        let mut fields = rest.split('.');
        let layer = fields.next()?.parse().ok()?;
        let attention = match fields.next()? {
            "decoder" => Attention::SelfAttention,
            "encoder" => Attention::Cross,
            _ => return None,
        };
        let part = match fields.next()? {
            "key" => Part::Key,
            "value" => Part::Value,
            _ => return None,
        };
        fields.next().is_none().then_some(CacheName {
            layer,
            attention,
            part,
        })
    }

    /// The graph output that gives this tensor, `present.{layer}.{decoder|encoder}.{key|value}`.
    pub(super) fn present(&self) -> String {
        let attention = match self.attention {
            Attention::SelfAttention => "decoder",
            Attention::Cross => "encoder",
        };
        let part = match self.part {
            Part::Key => "key",
            Part::Value => "value",
        };
        format!("present.{}.{attention}.{part}", self.layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inputs_and_outputs_and_nothing_else() {
        assert_eq!(
            CacheName::parse("past_key_values.3.encoder.value"),
            Some(CacheName {
                layer: 3,
                attention: Attention::Cross,
                part: Part::Value
            })
        );
        let present = CacheName::parse("present.0.decoder.key").unwrap();
        assert_eq!(present.present(), "present.0.decoder.key");
        for other in [
            "present.0.decoder",
            "present.0.decoder.key.1",
            "present.x.decoder.key",
            "present.0.cross.key",
            "logits",
        ] {
            assert_eq!(CacheName::parse(other), None, "{other}");
        }
    }
}
