namespace KataAgent.Images;

/// <summary>Importing an image into containerd failed at a named step; the inner exception is containerd's error.</summary>
public sealed class ImageImportException(string message, Exception? innerException = null) : Exception(message, innerException);
