//! optimum's merged decoder taken apart: `decoder_model_merged.onnx` is one `If` on
//! `use_cache_branch` whose `else` branch is `decoder_model.onnx` (no cache in, the first
//! tokens) and whose `then` branch is `decoder_with_past_model.onnx`. tract cannot type an `If`
//! whose branches give outputs of different shapes, so each branch becomes a model of its own
//! when the file is read; [`share_constants`](super::constants::share_constants) then makes the
//! two hold their common weights once.

use tract_onnx::pb;

/// One branch of the `If` at the top of a merged decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Branch {
    /// `then_branch`, taken with a cache: the with-past graph.
    WithCache,
    /// `else_branch`, taken without one: the graph of the first tokens.
    WithoutCache,
}

impl Branch {
    fn attribute(self) -> &'static str {
        match self {
            Branch::WithCache => "then_branch",
            Branch::WithoutCache => "else_branch",
        }
    }
}

/// The model of `branch` of the `If` at the top of the merged decoder `proto`: the main graph's
/// other nodes and the initializers they and the branch read, the branch's nodes inlined, its
/// outputs renamed to the `If`'s, and the inputs it does not read (the condition among them)
/// removed. Errors say what of this layout is missing.
pub(super) fn branch_model(
    proto: &pb::ModelProto,
    branch: Branch,
) -> Result<pb::ModelProto, String> {
    let graph = proto.graph.as_ref().ok_or("no graph")?;
    let (ix, node) = graph
        .node
        .iter()
        .enumerate()
        .find(|(_, n)| n.op_type == "If")
        .ok_or("no If node at the top of the merged graph")?;
    let name = branch.attribute();
    let body = node
        .attribute
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| format!("the If has no {name}"))?;
    if body.output.len() != node.output.len() {
        return Err(format!(
            "the If's {name} gives {} outputs for {}",
            body.output.len(),
            node.output.len()
        ));
    }
    let mut nodes: Vec<pb::NodeProto> = graph.node[..ix].to_vec();
    nodes.extend(body.node.iter().cloned());
    for (inner, outer) in body.output.iter().zip(&node.output) {
        if inner.name != *outer {
            nodes.push(pb::NodeProto {
                input: vec![inner.name.clone()],
                output: vec![outer.clone()],
                name: format!("{outer}_from_{name}"),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
    }
    nodes.extend(graph.node[ix + 1..].iter().cloned());
    let used: std::collections::HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut initializer: Vec<pb::TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    initializer.extend(body.initializer.iter().cloned());
    let input = graph
        .input
        .iter()
        .filter(|i| used.contains(i.name.as_str()))
        .cloned()
        .collect();
    // Field by field: `..proto.clone()` would copy every weight of the file once more.
    Ok(pb::ModelProto {
        ir_version: proto.ir_version,
        opset_import: proto.opset_import.clone(),
        producer_name: proto.producer_name.clone(),
        producer_version: proto.producer_version.clone(),
        domain: proto.domain.clone(),
        model_version: proto.model_version,
        doc_string: proto.doc_string.clone(),
        graph: Some(pb::GraphProto {
            node: nodes,
            name: graph.name.clone(),
            initializer,
            sparse_initializer: graph.sparse_initializer.clone(),
            doc_string: graph.doc_string.clone(),
            input,
            output: graph.output.clone(),
            value_info: graph.value_info.clone(),
            quantization_annotation: graph.quantization_annotation.clone(),
        }),
        metadata_props: proto.metadata_props.clone(),
        training_info: Vec::new(),
        functions: proto.functions.clone(),
    })
}
