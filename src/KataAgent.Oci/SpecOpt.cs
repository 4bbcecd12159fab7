namespace KataAgent.Oci;

/// <summary>
/// One small change to a spec, in the spirit of containerd's Go <c>oci.SpecOpts</c>:
/// a container's spec is <see cref="Specs.Generate"/> of a list of these, applied in order.
/// An option throws <see cref="InvalidSpecException"/> on input it cannot apply.
/// </summary>
public delegate void SpecOpt(Spec spec);
