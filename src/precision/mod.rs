//! Precision per op of the encoder: which products run in plain bfloat16 on the NPU, which in
//! `bf16x3`, and which in float32 on the host.
//!
//! After the device rewrite every product of a Whisper encoder is a `DeviceMatMul` (the stem's
//! two convolutions, each layer's Q, K, V, output and feed-forward projections) or a
//! `DeviceAttention` (a layer's `Q K^T`, softmax and `P V`). [`roles`] names each one by its
//! place in the graph, not by its node name (which differs between exports): a convolution
//! reads an im2col; `fc1` widens the model's width, `fc2` narrows it back; a square projection
//! feeding attention's first, second or third input is Q, K or V, and one reading attention's
//! output is the output projection. A [`PrecisionPlan`] then gives each role a precision, and
//! [`apply`] moves each op to the device of its precision before the weights are uploaded.

pub mod study;

use std::collections::BTreeMap;
use std::fmt;

use amanuensis_ops::{CpuIm2Col, DeviceAttention, DeviceHandle, DeviceMatMul};
use tract_onnx::tract_core::internal::*;

/// What a product of the encoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// The stem's first convolution (mel bins to the model's width).
    Conv1,
    /// The stem's second convolution (stride 2).
    Conv2,
    /// A layer's query projection.
    Q,
    /// A layer's key projection.
    K,
    /// A layer's value projection.
    V,
    /// A layer's attention: `Q K^T`, the softmax and `P V`, head by head.
    Attention,
    /// A layer's output projection (after attention).
    Out,
    /// A layer's first feed-forward product, GELU in its epilogue.
    Fc1,
    /// A layer's second feed-forward product.
    Fc2,
    /// A product this classification does not recognise.
    Other,
}

amanuensis_kernels::named_variants!(OpKind {
    Conv1 => "conv1",
    Conv2 => "conv2",
    Q => "q",
    K => "k",
    V => "v",
    Attention => "attention",
    Out => "out",
    Fc1 => "fc1",
    Fc2 => "fc2",
    Other => "other",
});

impl OpKind {
    /// Every kind of a Whisper encoder, stem first, then a layer's in the order they run.
    pub const ALL: [OpKind; 9] = [
        OpKind::Conv1,
        OpKind::Conv2,
        OpKind::Q,
        OpKind::K,
        OpKind::V,
        OpKind::Attention,
        OpKind::Out,
        OpKind::Fc1,
        OpKind::Fc2,
    ];

    /// Whether the kind belongs to a transformer layer (not the stem).
    pub fn in_layer(self) -> bool {
        !matches!(self, OpKind::Conv1 | OpKind::Conv2 | OpKind::Other)
    }
}

/// An op's role: its kind and, in a layer, the layer's index (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpRole {
    /// The layer (`None` for the stem and unrecognised ops).
    pub layer: Option<usize>,
    /// What the op is.
    pub kind: OpKind,
}

impl fmt::Display for OpRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "{}@{l}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// How one op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum OpPrecision {
    /// On the NPU, operands rounded to bfloat16 (NUMERICS.md sections 2-5).
    #[default]
    Bf16,
    /// On the NPU, each operand split into two bfloat16 parts, three products (section 7).
    Bf16x3,
    /// On the NPU in bfloat16, with the softmax and GELU in float32 on the host (section
    /// 7.4): for attention, the scores come back in float32.
    Bf16Host,
    /// On the host in float32 (the `cpu` backend's kernels): nothing of it reaches the NPU.
    F32,
}

amanuensis_kernels::named_variants!(OpPrecision {
    Bf16 => "bf16",
    Bf16x3 => "bf16x3",
    Bf16Host => "bf16-host",
    F32 => "f32",
});

/// Which layers a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layers {
    /// Every layer (and the stem, for its kinds).
    All,
    /// Layer `i`, from 0.
    Index(usize),
    /// The `i`-th from the end (1 is the last layer).
    FromEnd(usize),
}

impl Layers {
    fn covers(self, layer: Option<usize>, n_layers: usize) -> bool {
        match (self, layer) {
            (Layers::All, _) => true,
            (Layers::Index(i), Some(l)) => i == l,
            (Layers::FromEnd(i), Some(l)) => i >= 1 && l + i == n_layers,
            _ => false,
        }
    }
}

/// One rule of a plan: ops of `kind` (every kind with `None`) in `layers` compute in
/// `precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The kind, or every kind.
    pub kind: Option<OpKind>,
    /// The layers.
    pub layers: Layers,
    /// How those ops compute.
    pub precision: OpPrecision,
}

/// A precision for every op of an encoder: the last rule that covers an op decides, and an op
/// no rule covers takes `default`.
///
/// Written as text (`--precision-plan`) as comma-separated rules `KIND[@LAYER]=PRECISION`,
/// the first of which may be a bare precision (the default): `bf16,fc2=bf16x3,attention@-1=f32`
/// is bf16 everywhere but every layer's `fc2` (bf16x3) and the last layer's attention (float32
/// on the host). Kinds: conv1, conv2, q, k, v, attention, out, fc1, fc2, or `*`; layers count
/// from 0, or from the end with a minus sign (-1 is the last).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrecisionPlan {
    /// What an op no rule covers computes in.
    pub default: OpPrecision,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

impl PrecisionPlan {
    /// Every op in `precision`.
    pub fn uniform(precision: OpPrecision) -> PrecisionPlan {
        PrecisionPlan {
            default: precision,
            rules: Vec::new(),
        }
    }

    /// The precision of an op of `role` in an encoder of `n_layers` layers.
    pub fn precision_of(&self, role: OpRole, n_layers: usize) -> OpPrecision {
        self.rules
            .iter()
            .rev()
            .find(|r| {
                r.kind.is_none_or(|k| k == role.kind) && r.layers.covers(role.layer, n_layers)
            })
            .map_or(self.default, |r| r.precision)
    }

    /// This plan with one more rule, which overrides the others.
    pub fn with(mut self, kind: Option<OpKind>, layers: Layers, precision: OpPrecision) -> Self {
        self.rules.push(Rule {
            kind,
            layers,
            precision,
        });
        self
    }

    /// The contract's precision when every op computes in one on the NPU (`bf16` or
    /// `bf16x3` alone): such a plan is the contract itself, not a plan over several devices.
    pub fn contract_precision(&self) -> Option<amanuensis_kernels::gemm::Precision> {
        use amanuensis_kernels::gemm::Precision;
        match (
            self.default,
            self.rules.iter().all(|r| r.precision == self.default),
        ) {
            (OpPrecision::Bf16, true) => Some(Precision::Bf16),
            (OpPrecision::Bf16x3, true) => Some(Precision::Bf16x3),
            (OpPrecision::Bf16Host, true) => Some(Precision::Bf16Host),
            _ => None,
        }
    }

    /// Whether any op may compute in `precision`.
    pub fn uses(&self, precision: OpPrecision) -> bool {
        self.default == precision || self.rules.iter().any(|r| r.precision == precision)
    }
}

impl fmt::Display for PrecisionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.default)?;
        for r in &self.rules {
            let kind = r.kind.map_or("*".to_string(), |k| k.to_string());
            match r.layers {
                Layers::All => write!(f, ",{kind}")?,
                Layers::Index(i) => write!(f, ",{kind}@{i}")?,
                Layers::FromEnd(i) => write!(f, ",{kind}@-{i}")?,
            }
            write!(f, "={}", r.precision)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PrecisionPlan {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut plan = PrecisionPlan::uniform(OpPrecision::Bf16);
        let precision = |p: &str| {
            p.trim().parse::<OpPrecision>().map_err(|_| {
                format!(
                    "{p:?} is not a precision: bf16, bf16x3, bf16-host (softmax and GELU on \
                     the host) or f32 (float32 on the host)"
                )
            })
        };
        for (i, part) in text.split(',').map(str::trim).enumerate() {
            let Some((target, p)) = part.split_once('=') else {
                if i == 0 && !part.is_empty() {
                    plan.default = precision(part)?;
                    continue;
                }
                return Err(format!(
                    "{part:?} is not a rule: write KIND[@LAYER]=PRECISION, as fc2@-1=bf16x3"
                ));
            };
            let (kind, layers) = match target.trim().split_once('@') {
                Some((k, l)) => {
                    let l = l.trim();
                    let layers = match l.strip_prefix('-') {
                        Some(from_end) => from_end
                            .parse()
                            .ok()
                            .filter(|&i| i >= 1)
                            .map(Layers::FromEnd),
                        None => l.parse().ok().map(Layers::Index),
                    }
                    .ok_or_else(|| {
                        format!("{l:?} is not a layer: a number from 0, or -1 for the last")
                    })?;
                    (k.trim(), layers)
                }
                None => (target.trim(), Layers::All),
            };
            let kind = match kind {
                "*" => None,
                k => Some(
                    k.parse::<OpKind>()
                        .ok()
                        .filter(|k| *k != OpKind::Other)
                        .ok_or_else(|| {
                            format!(
                                "{k:?} is not an op kind: conv1, conv2, q, k, v, attention, \
                                 out, fc1, fc2 or *"
                            )
                        })?,
                ),
            };
            plan.rules.push(Rule {
                kind,
                layers,
                precision: precision(p)?,
            });
        }
        Ok(plan)
    }
}

/// Whether values pass through `node` unmixed with others: it is no product and every input
/// but one is a constant (a reshape, a transpose, a scale, a LayerNorm).
fn passes_through(model: &TypedModel, node: &TypedNode) -> bool {
    !node.op_is::<DeviceMatMul>()
        && !node.op_is::<DeviceAttention>()
        && !node.op_is::<CpuIm2Col>()
        && node
            .inputs
            .iter()
            .filter(|i| model.outlet_fact(**i).map_or(true, |f| f.konst.is_none()))
            .count()
            == 1
}

/// Follows `outlet` forwards through ops values pass through ([`passes_through`]) to the
/// nodes that combine it with others: each such node and the input slot it reads it at.
fn consumers(model: &TypedModel, outlet: OutletId) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut todo = vec![outlet];
    while let Some(o) = todo.pop() {
        for inlet in &model.nodes()[o.node].outputs[o.slot].successors {
            let node = &model.nodes()[inlet.node];
            if passes_through(model, node) && !node.outputs.is_empty() {
                todo.push(OutletId::new(node.id, 0));
            } else {
                found.push((inlet.node, inlet.slot));
            }
        }
    }
    found
}

/// Follows `outlet` backwards through ops values pass through to the node that computed it.
fn producer(model: &TypedModel, mut outlet: OutletId) -> usize {
    loop {
        let node = &model.nodes()[outlet.node];
        if !node.inputs.is_empty() && passes_through(model, node) {
            outlet = *node
                .inputs
                .iter()
                .find(|i| model.outlet_fact(**i).map_or(true, |f| f.konst.is_none()))
                .expect("one input is not a constant");
        } else {
            return node.id;
        }
    }
}

/// The role of every device op of a rewritten encoder (`DeviceMatMul`, `DeviceAttention`),
/// by node id, with the number of layers found (attention ops).
pub fn roles(model: &TypedModel) -> TractResult<(BTreeMap<usize, OpRole>, usize)> {
    let order = model.eval_order()?;
    let mut attention_layer = BTreeMap::new();
    for &id in &order {
        if model.nodes()[id].op_is::<DeviceAttention>() {
            let layer = attention_layer.len();
            attention_layer.insert(id, layer);
        }
    }
    let n_layers = attention_layer.len();
    let mut roles = BTreeMap::new();
    let mut convs = 0;
    // The layer of the last attention run, for the feed-forward products after it.
    let mut current: Option<usize> = None;
    for &id in &order {
        let node = &model.nodes()[id];
        if let Some(&layer) = attention_layer.get(&id) {
            current = Some(layer);
            roles.insert(
                id,
                OpRole {
                    layer: Some(layer),
                    kind: OpKind::Attention,
                },
            );
            continue;
        }
        let Some(op) = node.op_as::<DeviceMatMul>() else {
            continue;
        };
        let other = OpRole {
            layer: None,
            kind: OpKind::Other,
        };
        let source = producer(model, node.inputs[0]);
        let role = if model.nodes()[source].op_is::<CpuIm2Col>() && current.is_none() {
            convs += 1;
            match convs {
                1 => OpRole {
                    layer: None,
                    kind: OpKind::Conv1,
                },
                2 => OpRole {
                    layer: None,
                    kind: OpKind::Conv2,
                },
                _ => other,
            }
        } else if op.weights.is_none() {
            other
        } else {
            let (k, n) = (op.geometry.k, op.geometry.n);
            let feeds = consumers(model, OutletId::new(id, 0));
            let attention_input = feeds
                .iter()
                .find_map(|&(n, slot)| attention_layer.get(&n).map(|&l| (l, slot)));
            let reads_attention = attention_layer.get(&source).copied();
            match (attention_input, reads_attention) {
                (Some((layer, slot)), None) if k == n => OpRole {
                    layer: Some(layer),
                    kind: [OpKind::Q, OpKind::K, OpKind::V][slot.min(2)],
                },
                (None, Some(layer)) => OpRole {
                    layer: Some(layer),
                    kind: OpKind::Out,
                },
                (None, None) if n > k && current.is_some() => OpRole {
                    layer: current,
                    kind: OpKind::Fc1,
                },
                (None, None) if k > n && current.is_some() => OpRole {
                    layer: current,
                    kind: OpKind::Fc2,
                },
                _ => other,
            }
        };
        roles.insert(id, role);
    }
    Ok((roles, n_layers))
}

/// The device of each precision a plan uses.
#[derive(Debug, Clone)]
pub struct PrecisionDevices {
    /// Plain bfloat16 on the NPU (or its emulator).
    pub bf16: DeviceHandle,
    /// `bf16x3` on the NPU, when the plan uses it.
    pub bf16x3: Option<DeviceHandle>,
    /// `bf16-host` on the NPU, when the plan uses it.
    pub bf16_host: Option<DeviceHandle>,
    /// The host in float32.
    pub f32: DeviceHandle,
}

impl PrecisionDevices {
    fn get(&self, p: OpPrecision) -> Option<&DeviceHandle> {
        match p {
            OpPrecision::Bf16 => Some(&self.bf16),
            OpPrecision::Bf16x3 => self.bf16x3.as_ref(),
            OpPrecision::Bf16Host => self.bf16_host.as_ref(),
            OpPrecision::F32 => Some(&self.f32),
        }
    }
}

/// Moves every device op of `model` to the device of its precision under `plan`; returns each
/// op's role and precision, in the order they run.
pub fn apply(
    model: &mut TypedModel,
    plan: &PrecisionPlan,
    devices: &PrecisionDevices,
) -> TractResult<Vec<crate::placement::OpChoice>> {
    let (roles, n_layers) = roles(model)?;
    for rule in &plan.rules {
        let beyond = match rule.layers {
            Layers::All => None,
            Layers::Index(i) => (i >= n_layers).then(|| i.to_string()),
            Layers::FromEnd(i) => (i > n_layers).then(|| format!("-{i}")),
        };
        if let Some(layer) = beyond {
            bail!(
                "the precision plan {plan} names layer {layer}, and this encoder has {n_layers} \
                 layers (0 to {}, or -1 to -{n_layers})",
                n_layers.saturating_sub(1)
            );
        }
    }
    let order = model.eval_order()?;
    let mut chosen = Vec::new();
    for id in order {
        let Some(&role) = roles.get(&id) else {
            continue;
        };
        let precision = plan.precision_of(role, n_layers);
        let device = devices
            .get(precision)
            .ok_or_else(|| format_err!("no device for {precision} was opened"))?
            .clone();
        let node = &mut model.nodes_mut()[id];
        let op: Box<dyn TypedOp> = if let Some(op) = node.op_as::<DeviceMatMul>() {
            Box::new(DeviceMatMul {
                device,
                ..op.clone()
            })
        } else if let Some(op) = node.op_as::<DeviceAttention>() {
            Box::new(DeviceAttention {
                device,
                ..op.clone()
            })
        } else {
            continue;
        };
        node.op = op;
        chosen.push(crate::placement::OpChoice {
            node: node.name.clone(),
            role: role.to_string(),
            precision: precision.to_string(),
        });
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_read_and_write_as_text() {
        let plan: PrecisionPlan = "bf16, fc2=bf16x3 ,attention@-1=f32,*@0=bf16x3"
            .parse()
            .unwrap();
        assert_eq!(
            plan.to_string(),
            "bf16,fc2=bf16x3,attention@-1=f32,*@0=bf16x3"
        );
        let role = |kind, layer| OpRole { layer, kind };
        assert_eq!(
            plan.precision_of(role(OpKind::Fc2, Some(2)), 4),
            OpPrecision::Bf16x3
        );
        assert_eq!(
            plan.precision_of(role(OpKind::Attention, Some(3)), 4),
            OpPrecision::F32
        );
        assert_eq!(
            plan.precision_of(role(OpKind::Attention, Some(2)), 4),
            OpPrecision::Bf16
        );
        // The later rule wins.
        assert_eq!(
            plan.precision_of(role(OpKind::Attention, Some(0)), 1),
            OpPrecision::Bf16x3
        );
        assert_eq!(
            plan.precision_of(role(OpKind::Conv1, None), 4),
            OpPrecision::Bf16
        );
        assert_eq!(
            "f32".parse::<PrecisionPlan>().unwrap(),
            PrecisionPlan::uniform(OpPrecision::F32)
        );
        for bad in [
            "fc3=bf16",
            "fc2=bf8",
            "fc2@x=bf16",
            "fc2@-0=bf16",
            "bf16,fc2",
            "other=f32",
        ] {
            assert!(bad.parse::<PrecisionPlan>().is_err(), "{bad}");
        }
    }
}
