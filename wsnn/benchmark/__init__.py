"""The paper's comparison: baselines and ours, both protocols, several seeds.

    python -m wsnn.benchmark --flagfile=flags/benchmark_fashion_tags.cfg

For each seed, every method sees the same data, split (training,
validation, evaluated images; see `wsnn.training.state.split`) and features:
  annotation  RandomGuess, KNN, TagVote, CCA, NMF, TagProp, TagFeature,
              TagExample, Linear probe, Multi-CNN (phi_0), Multi-CNN (same
              budget), ours [, ours with the variant]
  refinement  UserTags, TagCooccur, TagVote, RPCA, Linear probe, Multi-CNN
              (phi_0), Multi-CNN (same budget), ours [, ours with the variant]
"Linear probe" is a per-tag logistic regression on the pretrained
features, its L2 strength chosen on the validation split
(`wsnn.linear_probe`, the fit that starts phi_0's head): the floor every
network row must clear.
KNN, TagVote, the compared methods (CCA, NMF, TagProp, TagFeature,
TagExample; each in its module of `wsnn.baselines`) and RPCA's image graph
use the *pretrained* backbone's features (the `--weights` file: ImageNet
VGG16 in the paper, `wsnn.pretrain`'s small CNN on FashionTags), as the
paper uses pretrained VGG16 features; the rows
"KNN (phi_0 features)" and "TagVote (phi_0 features)" use phi_0's, which saw
the noisy tags. "Multi-CNN (same budget)" trains phi_0 on with the logistic
loss for as many steps as stage 2 takes, with the same stage-2 learning rate
and the same selection of its length on the validation split, so that ours
against it is not just more training. "Multi-CNN (true labels)" (annotation
only) is an upper bound, not a competitor: phi_0 trained, with the same
settings and selection, on the training images' true labels in place of
their user tags (`true_label_tags`).

`--convention=jingwei` switches every row to the conventions of Li et al.'s
benchmark code (jingwei), so numbers compare with those it published: AP
ties ranked by position, AP 0 for labels without positives, cosine distance
for the neighbour methods (KNN, TagVote, TagProp, TagExample). The default,
"wsnn", scores a tie group as one threshold, leaves such labels out of mAP
and uses Euclidean distance. The tables say which was used.

Optional extras:
  --grid_search  coarse to fine on the first seed's annotation validation
                 split (never the evaluated images): lambda2 x stage-2
                 learning rate (lambda1 = 0), then lambda1, then alpha; each
                 trial starts stage 2 from the same phi_0 and keeps its best
                 stage-2 epoch (zero allowed). One search per --grid_user_error
                 value: "l1" is the paper's objective (the row "Ours"),
                 "bce" a variant (the row "Ours (bce)"). Every trial goes to
                 results.json and to TensorBoard's HParams dashboard
                 (<workdir>/benchmark/hparams);
  --ablation     each constraint alone (the paper's Ablation Analysis), and
                 the variant's data term alone, first seed, both protocols.
Writes to `<workdir>/benchmark/` (`benchmark-jingwei/` under that
convention): results.json (every number, chosen values, wall time and peak
memory per method), tables.md (the paper's Tables 2-5 layout, mean +- std
over seeds), ap_per_label_<protocol>.png and dynamic_neighbours.png (the
paper's Fig. 4).
"""
