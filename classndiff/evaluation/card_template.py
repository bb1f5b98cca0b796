"""The model card's text, with `{field}` slots that `card.write_model_card` fills from what
commands wrote (config.json, metrics.json, the benchmarks' JSON): no number is typed here."""

MODEL_CARD = """---
license: cc-by-nc-4.0
library_name: classndiff
pipeline_tag: image-classification
tags: [dermoscopy, skin-lesion, diffusion, dit, class-n-diff, medical-imaging, research-demo]
datasets: [HAM10000]
metrics: [accuracy, balanced_accuracy, roc_auc]
model-index:
  - name: class-n-diff-embedded
    results:
      - task: {{type: image-classification, name: 7-class dermoscopic lesion diagnosis}}
        dataset: {{type: HAM10000, name: "HAM10000, lesion-grouped test split"}}
        metrics:
{model_index}
---
# Class-N-Diff — embedded default weights

One jointly trained model that **diagnoses** a dermoscopic image (7 HAM10000 classes,
benign/malignant) and **generates** synthetic lesions by diagnosis, skin-tone group and sex:
a DiT denoiser and a timm classifier trained together, the classifier also fed the
denoiser's one-pass estimate x̂0 (Class-N-Diff, Imran & Munia, EMBC 2025, arXiv 2510.16887).

> **Research demo, not a medical device.** It must not be used to diagnose, triage or treat
> anyone. Its accuracy is below that of dermatologists and of pretrained models, it was
> trained on one public dataset of mostly light skin, and it has not been validated
> clinically.

## Intended use
Teaching and research: exploring how a jointly trained diffusion/classification model
behaves, producing clearly labelled synthetic example lesions per class, and studying
saliency, calibration and per-skin-tone performance. **Not intended** for clinical decisions,
for images other than dermoscopy (the model abstains on images that do not look like
dermoscopy, but that check is not perfect), or for commercial use (licence below).

## Model
| part | details |
|---|---|
| denoiser | {denoiser_row} — {den_m:.1f} M parameters; {prediction}; conditions: diagnosis, skin-tone group, sex, each with a null token (dropped with p = {t.cond_drop_prob} in training → classifier-free guidance). Sex has no visible signature in dermoscopy: it is kept as a condition, and no difference between sexes should be expected in the images. |
| classifier | {classifier_row} |
| joint loss | MSE to the {prediction} target + λ·ᾱ_t·{x0_term} with λ = {t.lambda_cls} on {t.joint_batch_fraction:.0%} of each batch, + CE(classifier(real), dx){focus_row} ({settings_stage}) |
| sampling | DPM-Solver++ {s.steps} steps, guidance {s.guidance_scale} on {guided} (DDIM and DDPM available) |
| files | `config.json` + `model.safetensors` (float16, EMA weights); no pickles |

## Training
Data: HAM10000 at 128 px from a folder in the shared `{data_folder}` layout (lesion-grouped split; training split skin-tone
groups: {train_tone_line}). Class-balanced sampling (weight ∝ count^-{t.balance_power}),
flips and 90° turns, label smoothing {t.label_smoothing}, AdamW, EMA {t.ema_decay}, bf16.

{stages_text}

The classifier is the EMA snapshot with the best validation score (step
{classifier_step} of stage {classifier_stage}): it
starts to overfit long before the denoiser stops improving. The logs are the trainer's
`log.csv` of each stage.

{figures}

{timings}

## Results (HAM10000 test split, lesion-grouped, {n_test} images)
Measured by `classndiff evaluate weights/embedded` (writes `metrics.json`); calibrated
probabilities (temperature {temperature}, fitted on the
validation split by `classndiff calibrate weights/embedded`).

| measure | value | bar | met |
|---|---|---|---|
{result_rows}

Per class, at the operating point (the top class is the prediction):

{per_class_table}

ECE before temperature scaling: {ece_uncalibrated}.{malignant_call_text}

Test split skin-tone groups: {tone_line}. Per-group results with bootstrap confidence
intervals (resampled by lesion) are in `reports/embedded/report.md`
(`classndiff evaluate weights/embedded --report reports/embedded …`): with so few brown and
darker images, per-group numbers are anecdotal.

### Generation
Graded by the independent evaluator in `weights/evaluator` (timm `{evaluator_backbone}`
at {evaluator_size} px, trained on real training images only; its own test
accuracy {evaluator_accuracy}, macro AUC
{evaluator_auc}).
{generation_text}

{measured_sections}

The λ = 0 ablation of the previous (mosaic) generator is `reports/ablation_gpu/report.md`.

{saliency_text}
### Abstention
An upload is refused as "not a dermoscopic lesion image" when its classifier features are far
from every class (Mahalanobis) or its colour statistics are far from the training images;
{abstention_text}

## Limitations
- Classification bars not met are marked **no** in the results table; the numbers there are
  the model's true figures on the test split.
- Generated images are {m.generated_size} px; the neutral-yardstick table above gives their
  realism, coverage, seams and tone control beside what real images reach; where a figure
  falls short of its bar, the images fall short in that way.
- HAM10000 is ~94 % lighter skin; the skin-tone groups come from an ITA estimate on 128 px
  images and are themselves uncertain. Darker-skin results rest on a handful of images.
- Images come from two sites (Vienna, Queensland); other dermatoscopes, populations and
  lesion types (e.g. acral, mucosal, non-pigmented) are out of distribution.
- The paper's generation claim (the classifier term, λ > 0, raises class fidelity against
  λ = 0 at the same budget without raising FD) is **not shown** by this project: each study,
  under a rule written before it, found a trade or met the rule on one training seed of two
  (README, "The paper's claim is not shown here"; docs/studies.md).

## Licence and citation
Weights: **CC BY-NC 4.0** (trained on HAM10000, CC BY-NC 4.0). Non-commercial use only;
credit the dataset:

- Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of
  multi-source dermatoscopic images of common pigmented skin lesions. *Scientific Data* 5,
  180161 (2018). doi:10.1038/sdata.2018.161
- Imran A., Munia N. Class-N-Diff: Classification-Induced Diffusion Model Can Make Fair Skin
  Cancer Diagnosis. EMBC 2025. arXiv:2510.16887
"""
