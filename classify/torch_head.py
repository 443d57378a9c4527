"""A small PyTorch softmax head on cached vectors: the classic "fully connected layer + softmax"."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted


class TorchSoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial softmax regression (one linear layer on standardized inputs), trained with AdamW and
    early stopping. (A hidden layer is what the ``mlp`` head is for.)

    Parameters
    ----------
    dropout : float, default=0.1
    lr : float, default=3e-3
    weight_decay : float, default=1e-4
    max_epochs : int, default=200
    patience : int, default=10
        Epochs without a better validation loss before stopping; the best weights are kept.
    batch_size : int, default=256
    validation_fraction : float, default=0.1
    random_state : int, default=0
    """

    def __init__(self, dropout=0.1, lr=3e-3, weight_decay=1e-4, max_epochs=200, patience=10,
                 batch_size=256, validation_fraction=0.1, random_state=0):
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _network(self, n_in: int, n_out: int):
        import torch.nn as nn

        return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(n_in, n_out))

    def fit(self, X, y):
        import torch

        X = np.asarray(X, dtype=np.float32)
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-6
        Xs = (X - self.mean_) / self.scale_
        from bertfeat.classify.heads import can_hold_out

        # A tiny training set cannot give every class a validation row: split at random instead of raising.
        stratify = y_idx if can_hold_out(y_idx, self.validation_fraction) else None
        tr, va = train_test_split(np.arange(len(Xs)), test_size=self.validation_fraction,
                                  random_state=self.random_state, stratify=stratify)
        gen = torch.Generator().manual_seed(self.random_state)
        torch.manual_seed(self.random_state)
        net = self._network(Xs.shape[1], len(self.classes_))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        Xt, yt, tr_t = torch.from_numpy(Xs), torch.from_numpy(y_idx.astype(np.int64)), torch.from_numpy(tr)
        best, best_state, waited = float("inf"), None, 0
        for epoch in range(self.max_epochs):
            net.train()
            for batch in torch.randperm(len(tr), generator=gen).split(self.batch_size):
                rows = tr_t[batch]
                opt.zero_grad()
                loss_fn(net(Xt[rows]), yt[rows]).backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val = loss_fn(net(Xt[va]), yt[va]).item()
            if val < best - 1e-4:
                best, waited = val, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= self.patience:
                    break
        net.load_state_dict(best_state)
        # The learned state is one linear layer: keep it as arrays, so the head is saved without pickle
        # and predicts without torch (dropout does nothing at inference).
        linear = net[-1]
        self.coef_ = linear.weight.detach().numpy().copy()
        self.intercept_ = linear.bias.detach().numpy().copy()
        self.n_epochs_ = epoch + 1
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        Xs = (np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_
        scores = Xs @ self.coef_.T + self.intercept_
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]
