// Explanation methods the page offers, with their main parameters. Names and bounds follow
// explain/methods/*.py (docs/explain.md); the server validates every value, this is only the form.
const IG_PARAMS = [
  { name: "n_steps", type: "int", value: 32, min: 2, max: 512, label: "n_steps" },
  { name: "internal_batch_size", type: "int", value: "", min: 1, max: 4096, label: "internal batch", placeholder: "auto" },
];

// How image heatmaps are drawn (explain/render.py RenderParams), offered for every image method.
const RENDER_PARAMS = [
  { name: "colormap", choices: ["inferno", "viridis", "turbo", "jet", "magma"], value: "inferno", label: "colormap" },
  { name: "alpha", type: "float", value: 0.6, min: 0, max: 1, label: "opacity" },
];

const IMAGE_METHODS = [
    { name: "saliency", label: "Saliency", params: [], note: "Absolute input gradient of the target class: fast, noisy." },
    {
      name: "grad_cam", label: "Grad-CAM",
      params: [{ name: "layer", type: "string", value: "", placeholder: "default layer", label: "layer" }],
      note: "Class activation of a convolutional layer, upsampled to the input.",
    },
    {
      name: "integrated_gradients", label: "Integrated Gradients",
      params: [...IG_PARAMS, { name: "baselines", choices: ["zero", "black", "white"], value: "zero", label: "baseline" }],
      note: "Path integral from a baseline image; attributions add up to the output change.",
    },
    {
      name: "noise_tunnel", label: "SmoothGrad (noise tunnel)",
      params: [
        { name: "nt_type", choices: ["smoothgrad", "smoothgrad_sq", "vargrad"], value: "smoothgrad", label: "type" },
        { name: "nt_samples", type: "int", value: 10, min: 1, max: 128, label: "samples" },
        { name: "stdevs", type: "float", value: 0.15, min: 0.01, max: 5, label: "noise stdev" },
      ],
      note: "Saliency averaged over noisy copies of the input.",
    },
    {
      name: "gradient_shap", label: "GradientSHAP",
      params: [
        { name: "n_samples", type: "int", value: 16, min: 1, max: 512, label: "samples" },
        { name: "stdevs", type: "float", value: 0.0, min: 0, max: 5, label: "noise stdev" },
      ],
      note: "Expected gradients over random baselines.",
    },
    {
      name: "occlusion", label: "Occlusion",
      params: [
        { name: "window", type: "int", value: "", min: 1, max: 4096, label: "window (px)", placeholder: "auto" },
        { name: "stride", type: "int", value: "", min: 1, max: 4096, label: "stride (px)", placeholder: "auto" },
      ],
      note: "Slides a patch over the image and measures the drop: slow, model-agnostic.",
    },
];

export const METHODS = {
  image: IMAGE_METHODS.map((m) => ({ ...m, params: [...m.params, ...RENDER_PARAMS] })),
  text: [
    {
      name: "integrated_gradients", label: "Integrated Gradients (tokens)",
      params: [...IG_PARAMS, { name: "baselines", choices: ["pad", "mask", "unk"], value: "pad", label: "baseline token" }],
      note: "Layer IG over the embeddings: one score per token.",
    },
    {
      name: "attention", label: "Attention and rollout",
      params: [{ name: "head_fusion", choices: ["mean", "max", "min"], value: "mean", label: "head fusion" }],
      note: "Attention maps per layer and head, and attention rollout (how much each token feeds [CLS]).",
    },
  ],
};

export function methodsFor(task) {
  return METHODS[task] || [];
}
