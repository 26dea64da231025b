//! The text that prompts each window: openai-whisper's `all_tokens`, `prompt_reset_since` and
//! the initial prompt (whisper/transcribe.py, release 20250625).

use super::decoding::python_tail;

/// The tokens transcribed so far and what of them prompts the next window.
#[derive(Debug, Clone)]
pub struct PromptContext {
    /// The initial prompt's tokens, then every segment's tokens in order.
    all_tokens: Vec<u32>,
    /// How many tokens of `all_tokens` the initial prompt is.
    initial: usize,
    /// Tokens before this index no longer prompt (the text was reset).
    reset_since: usize,
    /// `n_text_ctx / 2 - 1` less the initial prompt: how much of the previous text follows a
    /// carried initial prompt, as a Python slice bound (0 or below keeps from the start).
    remaining: isize,
    /// Whether the initial prompt prompts every window.
    carry_initial: bool,
}

impl PromptContext {
    /// The context before the first window: `initial_prompt` (tokens, may be empty) for a
    /// decoder of `n_text_ctx` positions.
    pub fn new(initial_prompt: Vec<u32>, n_text_ctx: usize, carry_initial: bool) -> PromptContext {
        PromptContext {
            remaining: (n_text_ctx / 2) as isize - 1 - initial_prompt.len() as isize,
            initial: initial_prompt.len(),
            all_tokens: initial_prompt,
            reset_since: 0,
            carry_initial,
        }
    }

    /// The prompt of the next window: the text since the last reset, or, with a carried
    /// initial prompt, that prompt and then as much of the later text as fits.
    pub fn prompt(&self) -> Vec<u32> {
        if self.carry_initial {
            let ignored = self
                .initial
                .max(self.reset_since)
                .min(self.all_tokens.len());
            let rest = python_tail(&self.all_tokens[ignored..], self.remaining);
            [&self.all_tokens[..self.initial], rest].concat()
        } else {
            self.all_tokens[self.reset_since..].to_vec()
        }
    }

    /// Appends a segment's tokens.
    pub fn push(&mut self, tokens: &[u32]) {
        self.all_tokens.extend_from_slice(tokens);
    }

    /// After a window: the text so far stops prompting when `condition_on_previous_text` is
    /// off or the window was decoded above temperature 0.5 (a likely hallucination).
    pub fn end_window(&mut self, condition_on_previous_text: bool, temperature: f32) {
        if !condition_on_previous_text || temperature > 0.5 {
            self.reset_since = self.all_tokens.len();
        }
    }

    /// The transcribed tokens, without the initial prompt.
    pub fn transcribed(&self) -> &[u32] {
        &self.all_tokens[self.initial..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_text_prompts_until_a_reset() {
        let mut c = PromptContext::new(vec![1, 2], 448, false);
        assert_eq!(c.prompt(), [1, 2]);
        c.push(&[3, 4]);
        c.end_window(true, 0.0);
        assert_eq!(c.prompt(), [1, 2, 3, 4]);
        c.push(&[5]);
        c.end_window(true, 0.6);
        assert!(c.prompt().is_empty());
        c.push(&[6]);
        c.end_window(true, 0.0);
        assert_eq!(c.prompt(), [6]);
        assert_eq!(c.transcribed(), [3, 4, 5, 6]);
    }

    #[test]
    fn a_carried_initial_prompt_leads_every_prompt() {
        // n_text_ctx 12: 5 prompt tokens, less the 2 of the initial prompt: 3 of the rest.
        let mut c = PromptContext::new(vec![1, 2], 12, true);
        c.push(&[3, 4, 5, 6, 7]);
        c.end_window(true, 0.0);
        assert_eq!(c.prompt(), [1, 2, 5, 6, 7]);
        c.end_window(false, 0.0);
        assert_eq!(c.prompt(), [1, 2]);
    }

    /// An initial prompt as long as the budget leaves `all_tokens[n:][-0:]`, which Python
    /// reads as everything; longer, `[-(-k):]` drops the first k.
    #[test]
    fn a_long_initial_prompt_follows_pythons_slices() {
        let mut c = PromptContext::new(vec![1, 2, 3, 4, 5], 12, true);
        c.push(&[6, 7, 8]);
        assert_eq!(c.prompt(), [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut c = PromptContext::new(vec![1, 2, 3, 4, 5, 6, 7], 12, true);
        c.push(&[8, 9, 10, 11]);
        assert_eq!(c.prompt(), [1, 2, 3, 4, 5, 6, 7, 10, 11]);
    }
}
