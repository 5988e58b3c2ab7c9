"""
Which genes a SETClassifier keeps
=================================

On a microarray set the first layer and the linear path decide which genes the network listens to.
:attr:`SETClassifier.feature_importances_ <set_cy.SETClassifier>` is each input's strength: the sum of
the absolute weights of its linear-path connections (normalised to 1, averaged over the
``n_estimators`` networks). This example fits the defaults (one network instead of three, to keep the
build fast) on ALLAML (72 leukaemia samples, 7129 genes, two classes) and compares the top genes with
those of a univariate F-test (``f_classif``, what many pipelines select with).

It reads ``ALLAML.mat`` from the shared data sets (``SET_CY_DATA``, see :doc:`/data`).
"""
import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_selection import f_classif
from sklearn.preprocessing import StandardScaler

from set_cy import SETClassifier
from set_cy.datasets import load_dataset

data = load_dataset("ALLAML", seed=0)
scaler = StandardScaler().fit(data.X_train)
X_train, X_test = scaler.transform(data.X_train), scaler.transform(data.X_test)
clf = SETClassifier(n_estimators=1, random_state=0).fit(X_train, data.y_train)  # the defaults average 3
print(f"{data.n_train} training samples, {data.n_features} genes; test accuracy "
      f"{clf.score(X_test, data.y_test):.3f}")

importance = clf.feature_importances_
F, _ = f_classif(X_train, data.y_train)
F = np.nan_to_num(F)
k = 50
top_net = np.argsort(-importance)[:k]
top_f = np.argsort(-F)[:k]
overlap = np.intersect1d(top_net, top_f)
print(f"top {k} genes: {overlap.size} in common with f_classif's top {k}")

# %%
# Importance of the top genes, and importance against the F statistic
# --------------------------------------------------------------------
# Blue bars are genes that f_classif also ranks among its top 50, grey bars the others. The scatter
# shows every gene: where the two rankings agree and where the network, which weighs the genes
# together rather than one at a time, ranks a gene differently from the univariate test.
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
show = top_net[:30]
colors = ["tab:blue" if g in set(top_f) else "tab:gray" for g in show]
ax0.bar(range(show.size), importance[show], color=colors)
ax0.set_xticks(range(show.size), [str(g) for g in show], rotation=90, fontsize=7)
ax0.set(xlabel="gene (column of ALLAML)", ylabel="feature_importances_",
        title=f"top 30 genes of SETClassifier ({overlap.size} of its top {k} in f_classif's)")
ax1.scatter(F, importance, s=4, alpha=0.4)
ax1.scatter(F[overlap], importance[overlap], s=10, color="tab:red", label="top 50 of both")
ax1.set(xscale="symlog", xlabel="f_classif F statistic", ylabel="feature_importances_",
        title="every gene")
ax1.legend()
fig.tight_layout()
plt.show()
